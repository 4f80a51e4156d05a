"""Domain errors. Each says what failed and what to do about it."""

Location = tuple[str | int, ...]
"""Where in a value a problem is, as pydantic's `loc`: keys and list indexes from its root."""


class AgentGraphError(Exception):
    """Base class of every error agentgraph raises on purpose."""

    detail: list[dict[str, object]] | None = None
    """Each problem with its location (`{"loc": [...], "msg": ...}`), when they are known:
    an HTTP error body carries them so a client can show each next to its field."""


class ConfigError(AgentGraphError):
    """A setting or option has a value agentgraph cannot use."""


class DatabaseError(AgentGraphError):
    """Postgres could not be started, reached or prepared."""


class ModelError(AgentGraphError):
    """A chat or embedding model could not be loaded or called."""


class ModelTimeoutError(ModelError):
    """A chat model gave no answer (or no next token) within `AGENTGRAPH_MODEL_TIMEOUT_S`."""


class AllModelsFailedError(ModelError):
    """Every model of a route (the primary and each fallback) failed one call; the message
    names each model and its failure."""


class PlanValidationError(AgentGraphError):
    """A plan breaks a rule (cycle, unknown step or kind, no entry step)."""

    def __init__(self, problems: list[str], *, where: list[Location] | None = None) -> None:
        """Name the problems; `where` gives the location in the plan of each, in order."""
        self.problems = problems
        self.where = where if where is not None else [() for _ in problems]
        self.detail = [{"loc": list(loc), "msg": msg} for loc, msg in self.located()]
        super().__init__("invalid plan: " + "; ".join(problems))

    def located(self) -> list[tuple[Location, str]]:
        """Each problem with its location in the plan (`()`: the plan as a whole)."""
        return list(zip(self.where, self.problems, strict=True))


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

    def __init__(self, message: str, *, detail: list[dict[str, object]] | None = None) -> None:
        """Say what is wrong; `detail` locates each problem in the decision."""
        self.detail = detail
        super().__init__(message)


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


class RunNotFoundError(AgentGraphError):
    """No background run of the thread has the id a request named (404)."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} has no background run {run_id!r} "
            f"(list them with GET /api/v1/threads/{thread_id}/runs)"
        )


class ArtifactNotFoundError(AgentGraphError):
    """The thread has no artefact with the id a request named (404)."""

    def __init__(self, thread_id: str, artifact_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} has no artifact {artifact_id!r} "
            f"(list them with 'agentgraph threads artifacts {thread_id}')"
        )


class RunEndedError(AgentGraphError):
    """A request to change a background run that has ended (409)."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} is {status} already: there is nothing to cancel")


class CronNotFoundError(AgentGraphError):
    """No cron has the id a request named (404)."""

    def __init__(self, cron_id: str) -> None:
        super().__init__(f"no cron {cron_id!r} (list them with GET /api/v1/crons)")


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


class AssistantNotFoundError(AgentGraphError):
    """No assistant has the id a request named (404)."""

    def __init__(self, assistant_id: str, graph_id: str) -> None:
        super().__init__(
            f"no assistant {assistant_id!r}: this server has one, of the graph {graph_id!r} "
            "(POST /assistants/search lists it; its graph id works as its id)"
        )


class ThreadExistsError(AgentGraphError):
    """A thread to be made exists already (409)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} exists already (send if_exists: do_nothing to get it back)"
        )
