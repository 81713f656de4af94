"""Query expansion for the lexical side: what a financial ratio is made of.

A question about a ratio ("What is Nike's FY2021 cash ratio?") names the ratio, while the filing
only shows its parts, in a statement ("Cash and equivalents", "Total current liabilities" on the
balance sheet). BM25 cannot bridge that; the embedding model bridges it poorly. So a question
that names a standard financial measure also searches, on the lexical side only, for the line
items it is computed from, as any finance textbook defines them.

Measured on MMLongBench (docs/quality.md): page hit@5 of the 83 questions about 10-K filings
rose from 0.627 to 0.687 in hybrid mode (0.506 to 0.627 lexical), and from 0.744 to 0.761 over
all 293 questions; a question that names no such measure is searched exactly as before.
"""

from __future__ import annotations

import re

# A measure, as questions name it, and the line items of the statements it is computed from.
FINANCIAL_MEASURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\bebitda\b", ("operating income", "depreciation amortization")),
    (r"\bcapex\b|capital expenditures?", ("purchases of property plant equipment",)),
    (r"working capital", ("total current assets", "total current liabilities")),
    (r"cash ratio", ("cash and equivalents", "total current liabilities")),
    (
        r"quick ratio",
        ("cash", "short-term investments", "accounts receivable", "current liabilities"),
    ),
    (r"current ratio", ("total current assets", "total current liabilities")),
    (r"inventory turnover|days? (?:of )?inventory|\bdio\b", ("cost of sales", "inventories")),
    (r"receivables? turnover|\bdso\b|days sales outstanding", ("revenues", "accounts receivable")),
    (
        r"payables? turnover|\bdpo\b|days payables? outstanding",
        ("cost of sales", "accounts payable"),
    ),
    (
        r"cash conversion cycle",
        ("inventories", "accounts receivable", "accounts payable", "cost of sales"),
    ),
    (r"gross (?:profit )?margin", ("gross profit", "revenues", "cost of sales")),
    (r"operating (?:income |profit )?margin", ("operating income", "revenues")),
    (r"net (?:profit |income )?margin|profit margin", ("net income", "revenues")),
    (r"return on (?:average )?assets|\broa\b", ("net income", "total assets")),
    (
        r"return on (?:average )?(?:shareholders'? )?equity|\broe\b",
        ("net income", "shareholders equity"),
    ),
    (r"debt[- ]to[- ]equity|leverage ratio", ("long-term debt", "total shareholders equity")),
    (r"interest coverage", ("operating income", "interest expense")),
    (r"fixed asset turnover", ("revenues", "property plant equipment net")),
    (r"(?<!fixed )asset turnover", ("revenues", "total assets")),
    (
        r"free cash flow",
        ("cash provided by operating activities", "purchases of property equipment"),
    ),
    (r"effective tax rate", ("provision for income taxes", "income before income taxes")),
    (r"dividend payout", ("dividends declared", "net income")),
    (r"\beps\b|earnings per share", ("earnings per share diluted", "basic", "net income")),
    (r"\bcogs\b", ("cost of goods sold", "cost of sales")),
    (r"\bsg&a\b", ("selling general administrative expenses",)),
    (r"\bd&a\b", ("depreciation amortization",)),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), terms) for p, terms in FINANCIAL_MEASURES)


def _named_items(question: str) -> list[str]:
    return [item for pattern, items in _COMPILED if pattern.search(question) for item in items]


def line_items(question: str) -> list[str]:
    """The line items of the financial measures the question names, each once."""
    return list(dict.fromkeys(_named_items(question)))


def measure_parts(question: str) -> str:
    """The line items of the financial measures the question names, as words ("" when it
    names none)."""
    return " ".join(_named_items(question))


def lexical_query(question: str) -> str:
    """The question as the lexical side searches it: with the line items of any financial
    measure it names."""
    extra = measure_parts(question)
    return f"{question} {extra}" if extra else question
