"""The protocols other people's tools already speak, over the same answer path as `/api/v1/ask`:
an OpenAI-compatible chat endpoint (`openai_chat`) and an MCP server (`mcp_server`, with the
`docqa mcp` stdio bridge in `docqa.cli_mcp`)."""

MCP_PATH = "/mcp"
MCP_INSTRUCTIONS = (
    "docqa answers questions about the user's own documents with citations down to the page. "
    "Use `ask` for an answer with sources, `search_documents` for the passages themselves, "
    "`list_documents` to see what there is, and `get_page` to read a cited page in full. "
    "Every source has a link to its page; cite them when you answer."
)
