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
    #: a certificate from an ACME CA is renewed at this fraction of its lifetime (2/3 by default),
    #: unless the CA suggests a window (ACME Renewal Information, RFC 9773)
    acme_renew_fraction: float = Field(2 / 3, gt=0, lt=1)
    #: how long the TXT records may take to show at the zone's server before an order gives up
    acme_propagation_timeout: float = Field(120.0, gt=0, le=3600)
    #: how long the CA may take to validate a challenge or issue a certificate
    acme_validation_timeout: float = Field(120.0, gt=0, le=3600)
    #: seconds before the first retry of an order the CA or the DNS server could not take now (doubling)
    acme_retry_base: float = Field(30.0, gt=0)
    #: seconds an ACME CA has to answer one request
    acme_timeout: float = Field(30.0, gt=0, le=300)
    #: orders one replica works on at once
    acme_concurrency: int = Field(4, ge=1, le=64)
    #: seconds between looks for due orders and renewals (a new order starts at once on its replica)
    acme_poll_interval: float = Field(5.0, gt=0)
