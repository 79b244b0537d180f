"""Test doubles shipped with the package (like ``structlog.testing``) so tests of the
worker and of other backends can record what a backend reported."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.domain.models import Step, StepStatus


@dataclass
class RecordingReporter:
    """A :class:`deployer.base.Reporter` that remembers every call, in order."""

    steps: list[Step] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        self.steps.append(Step(name, status, detail))

    async def detail(self, text: str) -> None:
        self.details.append(text)

    def statuses(self, name: str) -> list[StepStatus]:
        return [s.status for s in self.steps if s.name == name]

    def last(self, name: str) -> Step | None:
        for step in reversed(self.steps):
            if step.name == name:
                return step
        return None

    @property
    def output_lines(self) -> list[str]:
        """Every line sent with ``detail``, batches split back into lines."""
        return [line for text in self.details for line in text.split("\n")]
