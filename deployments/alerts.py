"""The regression alert: an automation that turns each `compare-models.model.regressed`
event into a notification through a webhook block (Slack or any HTTP endpoint).

`compare-models deploy` calls `ensure_regression_automation()`. The webhook URL comes from
configuration (COMPARE_MODELS_ALERT_WEBHOOK_URL, in the environment or `.env`) and is kept
in a Prefect block, never in a parameter or a log. With no URL configured the automation is
still created, disabled, and says how to enable it; configuring a URL later and deploying
again enables it.
"""

from __future__ import annotations

from compare_models.config import Settings
from compare_models.events import MODEL_REGRESSED

AUTOMATION = "compare-models: notify on model regression"
BLOCK = "compare-models-regression-webhook"
HOW_TO_ENABLE = (
    "set COMPARE_MODELS_ALERT_WEBHOOK_URL (a Slack incoming webhook or any HTTP endpoint that accepts a "
    "JSON POST) in the environment or .env, then run `compare-models deploy` again"
)

#: The notification's text; Prefect renders the templates from the triggering event.
SUBJECT = "compare-models: {{ event.payload.model }} regressed in run {{ event.payload.run_id }}"
BODY = (
    "{{ event.payload.model }} of run {{ event.payload.run_id }} (track {{ event.payload.track }}) regressed against "
    "champion run {{ event.payload.champion_run_id }}: {{ event.payload.reason }}. Manifest: {{ event.payload.manifest }}"
)


def webhook_block(url: str, *, name: str = BLOCK) -> str:
    """Saves (or updates) the webhook notification block; returns its document id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="compare-models",
        url=url,
        method="POST",
        timeout=10,
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"},
        # The endpoint may live in the cluster or on this machine (a test receiver, a relay).
        allow_private_urls=True,
    )
    return str(block.save(name, overwrite=True))


def regression_automation(block_document_id: str | None, *, name: str = AUTOMATION):
    """The automation: any regression event → a notification through the webhook block."""
    from prefect.automations import Automation
    from prefect.events.actions import DoNothing, SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    enabled = block_document_id is not None
    action = (
        SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)
        if enabled
        else DoNothing()
    )
    return Automation(
        name=name,
        description=(
            "Sends a notification when a compare-models run finds a model significantly worse than its "
            "champion."
            + ("" if enabled else f" Disabled: no webhook is configured; {HOW_TO_ENABLE}.")
        ),
        enabled=enabled,
        trigger=EventTrigger(
            expect={MODEL_REGRESSED.name},
            match=ResourceSpecification({"prefect.resource.id": MODEL_REGRESSED.resource_match}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[action],
    )


def ensure_regression_automation(
    settings: Settings | None = None, *, name: str = AUTOMATION, block_name: str = BLOCK
) -> str:
    """Creates the automation, or brings an existing one in line with the configuration."""
    from prefect.client.orchestration import get_client

    settings = settings or Settings()
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None
    block_id = webhook_block(url, name=block_name) if url else None
    automation = regression_automation(block_id, name=name)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
    if existing:
        automation.id = existing[0].id
        automation.update()
        state = "updated"
    else:
        automation.create()
        state = "created"
    return f"{state}, " + (
        "enabled: notifies the configured webhook" if url else f"disabled: {HOW_TO_ENABLE}"
    )
