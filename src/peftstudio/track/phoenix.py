"""Arize Phoenix as a sink: evaluations as OpenTelemetry traces, sent over OTLP/HTTP to
`logging.phoenix_endpoint` (a local `phoenix serve` listens on 127.0.0.1:6006/v1/traces).

Phoenix is a tracing tool, not a metrics chart, so only evaluations go there: one trace per
evaluation step (span `evaluation`, its scores as attributes) and, where the run generates for
evaluation, one child span per generation in OpenInference's LLM form (input.value = prompt,
output.value = prediction, the target and each score as attributes), which Phoenix shows as a
table of prompts and answers per step. The run's project name is the OpenInference resource
attribute Phoenix files traces under; name, tags and notes are attributes of every span.
"""

from __future__ import annotations

from typing import Any

from peftstudio.track.trackers import numeric_metrics

# OpenInference semantic conventions (openinference-semantic-conventions): what Phoenix reads.
PROJECT_ATTRIBUTE = "openinference.project.name"
SPAN_KIND = "openinference.span.kind"
# A tracker must never hold training up: spans are batched and exported off the training thread.
EXPORT_TIMEOUT_SECONDS = 10


class PhoenixSink:
    def __init__(self, endpoint: str, project: str, identity: dict[str, Any]):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # A provider of its own (not the global one): the user's own OpenTelemetry setup is left alone.
        self._provider = TracerProvider(resource=Resource.create({"service.name": "peftstudio",
                                                                  PROJECT_ATTRIBUTE: project}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint,
                                                                              timeout=EXPORT_TIMEOUT_SECONDS)))
        self._tracer = self._provider.get_tracer("peftstudio")
        self._identity = {"peftstudio.run_name": identity["name"], "peftstudio.tags": list(identity["tags"]),
                          **({"peftstudio.notes": identity["notes"]} if identity["notes"] else {})}

    def write(self, record: dict[str, Any]) -> None:
        scores = {name: value for name, value in numeric_metrics(record).items() if name.startswith("eval/")}
        if not scores:
            return  # training steps are metrics, not traces
        with self._tracer.start_as_current_span("evaluation", attributes={
                **self._identity, SPAN_KIND: "EVALUATOR", "peftstudio.step": record["step"], **scores}):
            pass

    def write_predictions(self, step: int, rows: list[dict[str, Any]]) -> None:
        """One evaluation's generations: a parent span for the step, a child LLM span per row."""
        with self._tracer.start_as_current_span("evaluation generations", attributes={
                **self._identity, SPAN_KIND: "CHAIN", "peftstudio.step": step, "peftstudio.samples": len(rows)}):
            for row in rows:
                scores = {f"eval.{name}": float(value) for name, value in (row.get("scores") or {}).items()}
                with self._tracer.start_as_current_span("generation", attributes={
                        **self._identity, SPAN_KIND: "LLM", "peftstudio.step": step,
                        "input.value": str(row["prompt"]), "output.value": str(row["prediction"]),
                        "peftstudio.target": str(row.get("target", "")), **scores}):
                    pass

    def close(self) -> None:
        self._provider.force_flush(EXPORT_TIMEOUT_SECONDS * 1000)
        self._provider.shutdown()
