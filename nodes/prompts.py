"""Prompts, as constants with named placeholders."""

SYSTEM_PROMPT = (
    "You are a careful assistant. Answer accurately and concisely. If you are not sure, say so."
)

STEP_PROMPT = """{instruction}
{dependencies}
Answer in a few sentences."""

DEPENDENCY_BLOCK = """
Results of earlier steps:
{results}
"""

SYNTHESIZE_PROMPT = """Request: {request}

Findings from the steps of the plan:
{findings}

Write the final answer to the request, using the findings. Be concise."""

PLANNER_PROMPT = """Break the request into a few steps as JSON.
Each step has: id (s1, s2, ...), kind (one of: {kinds}), instruction, depends_on (ids of steps
it needs), requires_approval (true only for actions with side effects).
At most {max_steps} steps. At least one step must have no dependencies.
{critique}
Request: {request}"""

REPLAN_BLOCK = """The previous plan was criticised: {reason} {feedback}
Failed steps: {failed}. Replace them with better steps."""

RAG_PROMPT = """Answer the question using only these passages. After each sentence, cite the
passage it comes from by its number in brackets, like [1].

{passages}
{dependencies}
Question: {question}

Answer in two or three sentences, each ending with a citation."""

RAG_PASSAGE = "[{label}] {text}"

EXTRACTIVE_NOTE = (
    "The model's answer was not supported by the retrieved documents ({why}); "
    "here are the passages that answer it best:"
)
