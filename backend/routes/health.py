"""``GET /v1/health`` (no token) and ``GET /v1/models``: what the server holds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from anyfill import __version__
from backend.auth import require_token
from backend.convert import QUAT_TOLERANCE
from backend.registry import LoadedModel, Registry
from backend.routes import common
from backend.schemas import Health, JointInfo, Limits, ModelInfo, ModelList, RotationConventions

router = APIRouter(prefix="/v1", tags=["server"], route_class=common.JSONRoute)


def model_info(lm: LoadedModel) -> ModelInfo:
    s = lm.schema
    joints = [JointInfo(name=n, index=j, parent=s.joints[p] if p >= 0 else None, parent_index=p,
                        moving=j in s.moving, rest_offset=lm.rest_offsets[j].tolist())
              for j, (n, p) in enumerate(zip(s.joints, s.parents, strict=True))]
    return ModelInfo(
        name=lm.name, skeleton=s.name, kind=lm.card.get("kind", "motion-anyorder"), variant=lm.model.cfg.variant,
        joints=joints, root=s.joints[s.root], up_axis="xyz"[s.up], units=s.units, window_frames=lm.length,
        fps_range=list(lm.fps_range), rotations=RotationConventions(quaternion_tolerance=QUAT_TOLERANCE),
        limits=Limits(), data=lm.card.get("data"), licence=lm.card.get("licence"),
        metrics=lm.card.get("metrics") or {}, conventions=lm.card.get("schema", {}).get("conventions"),
    )


@router.get("/health", response_model=Health)
async def health(registry: Annotated[Registry, Depends(common.registry)]) -> dict:
    """Liveness, version and loaded models; needs no token."""
    return {"status": "ok", "api": "v1", "version": __version__, "models": registry.names()}


@router.get("/models", response_model=ModelList, responses=common.ERRORS, dependencies=[Depends(require_token)])
async def models(request: Request) -> ModelList:
    """Each model's skeleton (joints, parents, rest offsets, moving joints), conventions and limits."""
    return request.app.state.model_list
