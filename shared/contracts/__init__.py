"""Message contracts: frozen pydantic models, one module per service.

Within a version only optional fields are added; anything else is a new
model beside the old one.
"""
