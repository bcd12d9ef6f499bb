"""JSON for messages: what IPython hands us is not always plain JSON."""

import base64
import datetime
import json
import math
import numbers


def _default(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        # Images from formatters arrive as bytes; the protocol wants base64.
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable: {obj!r:.100}")


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# One encoder for every message: json.dumps with options builds a new one
# per call, a third of what encoding a small reply costs.
_encoder = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=False)


def dumps(obj):
    """Serialize `obj`; NaN and infinities (not JSON) become null."""
    try:
        return _encoder.encode(obj)
    except ValueError:
        return _encoder.encode(_finite(obj))
