"""The API's routes, one ``APIRouter`` per area: :mod:`.health` (health and models), :mod:`.fill` (fill and
sample) and :mod:`.jobs`; :mod:`.common` holds what they share (dependencies, the JSON body reader)."""
