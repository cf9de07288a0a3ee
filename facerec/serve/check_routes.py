"""``/api/check`` and ``/api/people/{name}/check``: the suspicious samples of the gallery.

The same report as ``facerec enroll check`` (:func:`facerec.gallery.check.check_gallery`);
the person page lists a person's samples with their flag, and removes or moves one with the
existing ``DELETE /api/samples/{id}`` and ``POST /api/samples/{id}/move`` routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from facerec.gallery.check import CheckReport


def add_check_routes(api: APIRouter, srv: Any) -> None:
    """Register the check routes on ``api`` (``srv``: the app's shared state)."""

    def run() -> CheckReport:
        report: CheckReport = srv.service.check()
        return report

    @api.get("/check", tags=["gallery"])
    async def check() -> dict[str, Any]:
        """Every suspicious sample: ``{people, samples, flagged: [{person, sample_id,
        source_path, reason, closest_person, score}]}``, as ``facerec enroll check --json``."""
        report = await srv.model(run)
        return report.to_json()

    @api.get("/people/{name}/check", tags=["gallery"])
    async def person_check(name: str) -> dict[str, Any]:
        """One person's samples, each with its flag (``null`` when it looks right) and crop URL."""
        canon = await srv.io(srv.require_person, name)
        report = await srv.model(run)
        flags = {f.sample_id: f.to_json() for f in report.flagged if f.person == canon}
        samples = await srv.io(srv.store.samples, canon)
        return {
            "person": canon,
            "samples": [{"id": s.id, "source_path": s.source_path, "quality": round(float(s.quality), 2),
                         "image": f"/api/samples/{s.id}/image", "flag": flags.get(s.id)} for s in samples],
        }
