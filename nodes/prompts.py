"""Prompts, as constants with named placeholders."""

SYSTEM_PROMPT = (
    "You are a careful assistant. Answer accurately and concisely. If you are not sure, say so."
)

STEP_PROMPT = """{instruction}
{dependencies}
Answer in a few sentences."""

TOOL_SYSTEM_PROMPT = (
    "You solve the task with the tools you are given. Call a tool with exact arguments "
    "(for arithmetic, the calculator with the expression); when the tools' results answer the "
    "task, answer with them."
)

TOOL_EXAMPLE_TASK = "What is 3 * (4 + 5)?"
TOOL_EXAMPLE_EXPRESSION = "3 * (4 + 5)"
TOOL_EXAMPLE_RESULT = "27"
TOOL_EXAMPLE_ANSWER = "3 * (4 + 5) = 27."
"""A worked call the tool worker shows the model first: small models copy its shape."""

DEPENDENCY_BLOCK = """
Results of earlier steps:
{results}
"""

SYNTHESIZE_PROMPT = """Request: {request}

Findings from the steps of the plan:
{findings}

Write the final answer to the request, using the findings. Be concise."""

SUPERVISOR_PROMPT = """You lead a team of agents. Hand the task to the agent best suited with its
transfer tool; when their answers are enough, reply with the final answer yourself.
The agents:
{agents}"""

JUDGE_PROMPT = """Task: {instruction}

Several assistants answered the task.

{answers}

Which answer is the most correct, complete and clear? Give its number as "best" and one
short sentence as "reason"."""

PLANNER_PROMPT = """Break the request into a few steps as JSON.
Each step has: id (s1, s2, ...), kind (one of: {kinds}), instruction, depends_on (ids of steps
it needs), requires_approval (true only for actions with side effects), and optionally agent
(who runs it) and tools (for a tool step: the tools it calls). The agents:
{agents}
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
