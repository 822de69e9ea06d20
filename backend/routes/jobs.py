"""``GET /v1/jobs/{id}`` and ``POST /v1/jobs/{id}/cancel``: a running or recent request by its job id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from backend.auth import require_token
from backend.errors import RequestError
from backend.jobs import Jobs
from backend.routes import common
from backend.schemas import CancelResponse, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=common.ERRORS, dependencies=[Depends(require_token)],
                   route_class=common.JSONRoute)
JobTable = Annotated[Jobs, Depends(common.jobs)]


@router.get("/{job_id}", response_model=JobStatus)
async def job_status(job_id: str, jobs: JobTable) -> dict:
    """A running or recently finished job: state and progress (``done`` of ``total`` steps)."""
    job = jobs.get(job_id)
    if job is None:
        raise RequestError("job_id", f"no job {job_id!r}", 404)
    return job.status()


@router.post("/{job_id}/cancel", response_model=CancelResponse)
async def cancel(job_id: str, jobs: JobTable) -> dict:
    """Cancel a queued or running job; its own request then answers 409 (or a ``cancelled`` event)."""
    job = jobs.get(job_id)
    if job is None:
        raise RequestError("job_id", f"no job {job_id!r}", 404)
    active = job.state in ("queued", "running")
    jobs.cancel(job_id)
    return {"id": job_id, "cancelled": active, "state": "cancelling" if active else job.state}
