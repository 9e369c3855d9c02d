"""Message contracts: frozen pydantic models, one module per service.

Within a version only optional fields are added; anything else is a new
model beside the old one.
"""

from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as _PydanticError

from shared.errors import ValidationError

M = TypeVar("M", bound=BaseModel)


def field_errors(exc: _PydanticError) -> list[dict[str, str]]:
    """pydantic's errors as ``details.fields`` (never echoing the input values)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def parse(model: type[M], data: Any) -> M:
    """``model`` from ``data``, or ``validation_error`` with ``details.fields``."""
    try:
        return model.model_validate(data)
    except _PydanticError as exc:
        raise ValidationError("request validation failed", details={"fields": field_errors(exc)}) from None
