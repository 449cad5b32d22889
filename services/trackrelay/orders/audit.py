"""What the order database holds, for the demo's checks: counts, true popularity, lost ids."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.db.schema import order_lines, orders


async def count_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(orders))).scalar_one())


async def popularity(engine: AsyncEngine) -> dict[str, float]:
    """The true popularity: ``sum(qty)`` per SKU over every stored order line."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(order_lines.c.sku, func.sum(order_lines.c.qty)).group_by(order_lines.c.sku)
        )
        return {str(sku): float(q) for sku, q in rows}


async def count_lines(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(order_lines)
        return int((await conn.execute(q)).scalar_one())


async def missing_orders(engine: AsyncEngine, ids: Sequence[str], chunk: int = 500) -> list[str]:
    """The ids among ``ids`` that the store does not hold (an accepted order lost)."""
    missing: list[str] = []
    async with engine.connect() as conn:
        for i in range(0, len(ids), chunk):
            part = list(ids[i : i + chunk])
            q = select(orders.c.order_id).where(orders.c.order_id.in_(part))
            found = {r.order_id for r in await conn.execute(q)}
            missing += [x for x in part if x not in found]
    return missing
