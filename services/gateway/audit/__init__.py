"""The audit log: hash-chained per tenant, written before every answer, and its routes."""
