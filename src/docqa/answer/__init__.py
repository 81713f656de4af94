"""Answers with citations: retrieval, then a model server (streamed) or the built-in extractive
answerer. `Answerer.start` opens an answer; the HTTP layer streams it."""

from docqa.answer.llm import LLM, ChatMessage, CompletionStream, OpenAILLM, make_llm
from docqa.answer.reply import Answer
from docqa.answer.service import Answerer, Question

__all__ = [
    "LLM",
    "Answer",
    "Answerer",
    "ChatMessage",
    "CompletionStream",
    "OpenAILLM",
    "Question",
    "make_llm",
]
