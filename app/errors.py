"""Domain errors. Each says what failed and what to do about it."""


class AgentGraphError(Exception):
    """Base class of every error agentgraph raises on purpose."""


class ConfigError(AgentGraphError):
    """A setting or option has a value agentgraph cannot use."""


class DatabaseError(AgentGraphError):
    """Postgres could not be started, reached or prepared."""


class ModelError(AgentGraphError):
    """A chat or embedding model could not be loaded or called."""


class PlanValidationError(AgentGraphError):
    """A plan breaks a rule (cycle, unknown step or kind, no entry step)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems))


class ThreadNotFoundError(AgentGraphError):
    """No checkpoint exists for the thread id."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"unknown thread {thread_id!r}: no run has been stored under that id "
            "(list ids with 'agentgraph threads list')"
        )


class NothingToResumeError(AgentGraphError):
    """The thread exists but is not waiting for a decision."""

    def __init__(self, thread_id: str, status: str) -> None:
        self.thread_id = thread_id
        self.status = status
        super().__init__(
            f"thread {thread_id!r} is {status}, not waiting for approval: nothing to resume"
        )


class NothingToContinueError(AgentGraphError):
    """The thread exists but has no step left to run."""

    def __init__(self, thread_id: str, status: str) -> None:
        self.thread_id = thread_id
        self.status = status
        super().__init__(f"thread {thread_id!r} is {status}: it has nothing left to run")


class InvalidDecisionError(AgentGraphError):
    """A resume value is not a valid approval decision."""


class ThreadBusyError(AgentGraphError):
    """Another run holds the thread, or the thread waits for a decision, not a new request."""

    def __init__(self, thread_id: str, why: str) -> None:
        self.thread_id = thread_id
        super().__init__(f"thread {thread_id!r} {why}")


class ServerStoppingError(AgentGraphError):
    """The server is shutting down and takes no new runs."""


class WorkerStartError(AgentGraphError):
    """A server worker process could not start its app (its log says why)."""


class RetrievalError(AgentGraphError):
    """The document store cannot be used as asked (unknown collection, wrong dimension)."""


class AuthError(AgentGraphError):
    """A request carries no usable API key (401)."""


class ForbiddenError(AgentGraphError):
    """The request's key lacks the scope the action needs (403)."""


class RateLimitedError(AgentGraphError):
    """The key sent more requests than its rate allows (429, with Retry-After)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class BudgetExceededError(RateLimitedError):
    """The key's runs spent its daily token or cost budget (429, Retry-After: until the
    next day, UTC)."""


class ModelNotFoundError(AgentGraphError):
    """A request named a model the server does not offer (404)."""


class ResponseNotFoundError(AgentGraphError):
    """No stored response has the id a request named (404)."""


class ToolArgumentError(AgentGraphError):
    """A tool was called with arguments its schema does not take."""


class ToolRefusedError(AgentGraphError):
    """The tool policy refused a call: the tool is unknown, not granted to the agent, or its
    effect needs an approval the run has not given."""


class ToolFailedError(AgentGraphError):
    """A tool call failed or ran past its timeout."""


class ManifestError(ConfigError):
    """The manifest cannot be read, or says something invalid: the message names the file,
    the line and the field."""
