"""A flow for `tests/integration/test_prefect_auth.py`: deployed to the auth-on stack's `cpu`
pool and run by its worker; it logs a line and makes an artifact, where a leaked auth string
would show."""

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact


@flow(name="auth-probe")
def auth_probe(note: str = "hello") -> str:
    get_run_logger().info("auth probe says %s", note)
    create_markdown_artifact(f"auth probe: {note}", key="auth-probe")
    return note
