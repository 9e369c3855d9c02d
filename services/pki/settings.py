"""The pki service's settings, on top of every process's (``shared.config.Settings``).

``COFFER_PUBLIC_URL`` (common to all) is where relying parties reach the
gateway: set, issued certificates name their CA's CRL and the OCSP responder.
"""

from __future__ import annotations

from pydantic import Field

from shared.config import DURATION, Settings


class PkiSettings(Settings):
    #: ``certificate.expiring`` is published this long before a certificate's ``not_after``
    pki_expiry_notice: str = Field("30d", pattern=DURATION)
    #: a CRL's validity (``next_update``); it is re-signed when a third of it is left, and on
    #: every revocation
    pki_crl_lifetime: str = Field("72h", pattern=DURATION)
    #: an OCSP response's validity (``next_update``); a signed answer is reused for half of it
    #: while the certificate's status stays the same
    pki_ocsp_lifetime: str = Field("1h", pattern=DURATION)
    #: seconds between runs of the PKI's jobs (expiry events, CRL refresh)
    lifecycle_interval: float = Field(30.0, gt=0)
