"""NGSI-LD problem types as exceptions (ETSI GS CIM 009 §5.5.2).

Services raise these; the API turns them into RFC 7807 problem details with the spec's status code.
"""

from __future__ import annotations

from typing import Any, ClassVar

ERROR_TYPE_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiError(Exception):
    """Base of every error a client can cause or see; `name` is the ETSI problem type."""

    name: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERROR_TYPE_BASE + self.name

    def problem(self) -> dict[str, Any]:
        """The ProblemDetails body."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class InvalidRequest(NgsiError):
    name = "InvalidRequest"
    status = 400
    title = "Invalid request"


class BadRequestData(NgsiError):
    name = "BadRequestData"
    status = 400
    title = "Bad request data"


class AlreadyExists(NgsiError):
    name = "AlreadyExists"
    status = 409
    title = "Already exists"


class OperationNotSupported(NgsiError):
    name = "OperationNotSupported"
    status = 422
    title = "Operation not supported"


class ResourceNotFound(NgsiError):
    name = "ResourceNotFound"
    status = 404
    title = "Resource not found"


class NonexistentTenant(NgsiError):
    name = "NonexistentTenant"
    status = 404
    title = "Nonexistent tenant"


class TooManyResults(NgsiError):
    name = "TooManyResults"
    status = 403
    title = "Too many results"


class TooComplexQuery(NgsiError):
    name = "TooComplexQuery"
    status = 403
    title = "Too complex query"


class LdContextNotAvailable(NgsiError):
    name = "LdContextNotAvailable"
    status = 503
    title = "JSON-LD context not available"


class UnsupportedMediaType(NgsiError):
    """HTTP 415: the request's Content-Type is neither application/json nor application/ld+json."""

    name = "InvalidRequest"
    status = 415
    title = "Unsupported media type"


class NotAcceptable(NgsiError):
    """HTTP 406: the Accept header asks for a representation Polis cannot produce."""

    name = "InvalidRequest"
    status = 406
    title = "Not acceptable"


class PayloadTooLarge(NgsiError):
    """HTTP 413: the request body is over the configured limit."""

    name = "BadRequestData"
    status = 413
    title = "Payload too large"


class Unauthorized(NgsiError):
    """HTTP 401: the API key is missing where one is needed, malformed, unknown or revoked."""

    name = "Unauthorized"
    status = 401
    title = "Unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="polis"'}


class Forbidden(NgsiError):
    """HTTP 403: the department's grants do not cover this action on this dataset and tier."""

    name = "Forbidden"
    status = 403
    title = "Forbidden"


class PersonalDataRefused(NgsiError):
    """HTTP 422: the message carries a field that identifies people (a face, a voice, a name, a phone
    number, an e-mail address, a licence plate, a home address); Polis counts, it never watches. The
    problem names the `field` and the `rule`; nothing of the message is stored."""

    name = "PersonalDataRefused"
    status = 422
    title = "Personal data refused"


class PrivacyBudgetExceeded(NgsiError):
    """HTTP 403: a differentially private release would take the dataset past its ε budget."""

    name = "PrivacyBudgetExceeded"
    status = 403
    title = "Privacy budget exceeded"
