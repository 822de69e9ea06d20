"""Non-blocking requests: the HTTP call runs in a worker thread, a modal timer applies the answer on the main
thread, progress shows in the status bar and Esc cancels (here and on the server).

``execute()`` runs the same steps synchronously: scripts, tests and background mode use it (there,
``bpy.app.timers`` never fire and ``INVOKE_DEFAULT`` falls back to ``execute()``). Either way nothing is
written before the whole answer has been checked, so a failure leaves the rig untouched; the operators
carry ``{'REGISTER', 'UNDO'}`` and write in one go, so one undo step restores the rig. A Fill of several parts (the
body, then each hand: a hand's wrist comes from the body's fill) writes a part before it asks for the next, so it
keeps the rig's curves as they were before the first part and puts them back when a later part fails or is
cancelled.
"""

from __future__ import annotations

import time

import bpy

from . import client as client_mod
from . import keys, provenance
from . import plan as plan_mod
from .curves import SavedCurves


def preferences(context=None):
    """The extension's preferences, or None when it runs unregistered as an add-on (scripts)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def backend_url(context=None) -> str:
    """The backend's URL from the preferences (:data:`client.DEFAULT_URL` when unregistered)."""
    prefs = preferences(context)
    return prefs.backend_url if prefs else client_mod.DEFAULT_URL


def make_client(context=None) -> client_mod.Client:
    prefs = preferences(context)
    return client_mod.Client(backend_url(context), prefs.token if prefs else "")


class SavedRig:
    """What a Fill writes on a rig, as it was: its curves (:class:`.curves.SavedCurves`), the action's record of
    Anyfill's keys (:mod:`.provenance`: left as the failed Fill wrote it, the next Fill took the keys it had put back
    for the animator's) and the panel's record of the last fill (the rig settings named ``last_*``)."""

    def __init__(self, obj):
        self.object_name = obj.name
        bag = keys.channelbag(obj)
        self.curves = SavedCurves(bag) if bag is not None else None
        self.generated = provenance.saved(bag.id_data) if bag is not None else None
        self.record = {p.identifier: getattr(obj.anyfill, p.identifier)
                       for p in obj.anyfill.bl_rna.properties if p.identifier.startswith("last_")}

    def restore(self) -> None:
        if self.curves is not None:
            self.curves.restore()
            provenance.restore(self.curves.bag.id_data, self.generated)
        obj = bpy.data.objects.get(self.object_name)
        if obj is not None:
            for name, value in self.record.items():
                setattr(obj.anyfill, name, value)


class AsyncRequest:
    """Mixin for operators that send one request per stage (a full rig: the body, then each hand). Subclasses
    define ``prepare(context, stage) -> Plan``, ``request(client, plan, progress, cancel) -> answer`` and
    ``finish(context, plan, answer) -> str``, and may define ``stages(context)``; each stage is prepared after
    the one before it was written (a hand's wrist comes from the body's fill)."""

    _worker = None
    _timer = None
    _plan = None
    _client = None
    _stages: list = []
    _messages: list = []
    _warnings: list = []
    _saved: SavedRig | None = None  # the rig before the first of several stages wrote
    _notes: list = []  # what the report says besides what was written (keys taken as the animator's)
    _t0 = 0.0
    label = "Anyfill"

    # --- to override ---
    def stages(self, context) -> list:
        return [None]

    def prepare(self, context, stage=None):
        raise NotImplementedError

    def warnings(self, context) -> list[str]:
        """What the operator leaves out and the report must say (read before anything is written)."""
        return []

    def before(self, context) -> list[str]:
        """What to change on the rig before the first stage is prepared (put back if the operator fails: set
        ``_saved``), and the report's notes on it."""
        return []

    def request(self, client, plan, progress, cancel):
        raise NotImplementedError

    def finish(self, context, plan, answer) -> str:
        raise NotImplementedError

    # --- shared ---
    def _roll_back(self) -> None:
        """Put back what earlier stages wrote (a full rig whose hand failed after its body was written)."""
        if self._saved is not None:
            self._saved.restore()
            self._saved, self._messages = None, []

    def _fail(self, e: Exception) -> None:
        """Report an error: ours say what to do; anything else is named (never a traceback). What earlier stages
        wrote is put back first."""
        self._roll_back()
        if isinstance(e, keys.RigError | client_mod.BackendError):
            text = str(e)
        else:
            text = f"Anyfill failed: {type(e).__name__}: {e}"
        self.report({"ERROR"}, "; ".join([*self._messages, text]))

    def _start(self, context) -> bool:
        """Prepare the first stage (the stages are listed first)."""
        self._messages, self._warnings, self._notes, self._saved = [], [], [], None
        try:
            self._client = make_client(context)
            self._stages = list(self.stages(context))
            self._warnings = list(self.warnings(context))
            self._notes = list(self.before(context))
        except Exception as e:  # noqa: BLE001 - reported to the user
            self._fail(e)
            return False
        return self._next(context)

    def _next(self, context) -> bool:
        """Prepare the next stage's plan; a stage with nothing to fill is passed over while another fills."""
        skipped = []
        while self._stages:
            try:
                self._plan = self.prepare(context, self._stages.pop(0))
                return True
            except plan_mod.NothingToFill as e:
                skipped.append(str(e))
            except Exception as e:  # noqa: BLE001 - reported to the user
                self._fail(e)
                return False
        if self._messages:  # every stage left had nothing to fill: what was written stands
            self._messages += skipped
            self._plan = None
            return True
        self.report({"ERROR"}, "; ".join(skipped))
        return False

    def _finish(self, context, answer) -> set[str]:
        """Write a stage's answer; report once the last stage is written."""
        try:
            if self._stages and self._saved is None:  # a later stage may still fail: keep what to put back
                self._saved = SavedRig(bpy.data.objects[self._plan.object_name])
            self._messages.append(self.finish(context, self._plan, answer))
        except Exception as e:  # noqa: BLE001 - reported to the user
            self._fail(e)
            return {"CANCELLED"}
        if self._stages:
            return {"RUNNING_MODAL"}
        return self._done()

    def _done(self) -> set[str]:
        """The report of a finished operator: what was written, then what was left out (a warning then)."""
        self._saved = None
        self.report({"WARNING"} if self._warnings else {"INFO"},
                    "; ".join([*self._messages, *self._notes, *self._warnings]))
        return {"FINISHED"}

    def _error(self, e: BaseException) -> set[str]:
        self._roll_back()
        if isinstance(e, client_mod.Cancelled):
            self.report({"WARNING"}, "Anyfill: cancelled; nothing was written")
        elif isinstance(e, client_mod.BackendError | keys.RigError):
            self.report({"ERROR"}, str(e))
        else:
            self.report({"ERROR"}, f"Anyfill failed: {type(e).__name__}: {e}")
        return {"CANCELLED"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        while True:
            try:
                answer = self.request(self._client, self._plan, None, None)
            except Exception as e:  # noqa: BLE001 - reported to the user
                return self._error(e)
            result = self._finish(context, answer)
            if result != {"RUNNING_MODAL"}:
                return result
            if not self._next(context):
                return {"CANCELLED"}
            if self._plan is None:
                return self._done()

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        return self.begin_modal(context)

    def _launch(self) -> None:
        client, plan = self._client, self._plan
        self._worker = client_mod.Worker(lambda progress, cancel: self.request(client, plan, progress, cancel))
        self._worker.start()

    def begin_modal(self, context):
        """The interactive path: start the worker and the timer; ``modal`` takes it from there."""
        if not self._start(context):
            return {"CANCELLED"}
        self._launch()
        plan = self._plan
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        self._t0 = time.perf_counter()
        self._status(context, f"{self.label}: {plan.summary}... (Esc to cancel)")
        return {"RUNNING_MODAL"}

    def _status(self, context, text: str | None) -> None:
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _cleanup(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        self._status(context, None)

    def modal(self, context, event):
        """One event; whatever happens, the timer, progress bar and status text go when the operator ends."""
        result = {"CANCELLED"}
        try:
            result = self._modal(context, event)
        except Exception as e:  # noqa: BLE001 - reported to the user
            self._fail(e)
        finally:
            if result != {"RUNNING_MODAL"} and result != {"PASS_THROUGH"}:
                self._cleanup(context)
        return result

    def _modal(self, context, event):
        if event.type == "ESC":
            self._worker.cancel_event.set()
            job_id = self._plan.job_id
            client_mod.Worker(lambda p, c: self._client.cancel(job_id)).start()
            self._roll_back()
            self.report({"WARNING"}, "Anyfill: cancelled; nothing was written")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if not self._worker.done:
            done, total = self._worker.progress
            elapsed = time.perf_counter() - self._t0
            pct = int(100 * done / total) if total else min(95, int(elapsed * 10))
            context.window_manager.progress_update(pct)
            step = f" {done}/{total} steps" if total else ""
            self._status(context, f"{self.label}: {self._plan.summary}{step}, {elapsed:.1f} s (Esc to cancel)")
            return {"RUNNING_MODAL"}
        if self._worker.error is not None:
            return self._error(self._worker.error)
        result = self._finish(context, self._worker.result)
        if result == {"RUNNING_MODAL"}:  # the next stage (a hand after the body)
            if not self._next(context):
                result = {"CANCELLED"}
            elif self._plan is None:
                result = self._done()
            else:
                self._launch()
        return result
