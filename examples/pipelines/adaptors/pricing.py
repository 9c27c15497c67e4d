"""A toy pricing adaptor: what a real one would fetch from a service."""

UNIT_PRICE = 250


def price(quantity: int) -> int:
    return quantity * UNIT_PRICE
