"""Create (or refresh) the automation that marks zombie flow runs Crashed on the Prefect server.

A flow run emits a `prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
(worker.sh sets 30). When a run's process dies without a final state (SIGKILL, an OOM kill, a lost machine, the
worker gone too), the heartbeats stop; this proactive trigger then moves the run to Crashed instead of leaving it
Running forever. Prefect's own recipe (docs: "How to detect and respond to zombie flows"); called by deploy.sh.
"""

from __future__ import annotations

import os
from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

NAME = "fsa-distill: crash zombie flow runs"


def zombie_automation(heartbeat_s: int) -> Automation:
    """Crashed after three missed heartbeats."""
    return Automation(
        name=NAME,
        description="Flow runs that stopped sending heartbeats are marked Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * heartbeat_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message="Flow run marked Crashed: its heartbeats stopped.")],
    )


def main() -> None:
    heartbeat_s = int(os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30"))
    try:
        Automation.read(name=NAME).delete()  # refresh: the heartbeat frequency may have changed
    except ValueError:
        pass  # not there yet
    created = zombie_automation(heartbeat_s).create()
    print(f"automation {NAME!r} ({created.id}): Crashed after {3 * heartbeat_s} s without a heartbeat")


if __name__ == "__main__":
    main()
