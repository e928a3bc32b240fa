"""order_events: notify the continuous producer when rows become pending (PostgreSQL)

A statement-level trigger after INSERT (one notification per statement, so a COPY of millions
of rows costs one) and a row-level one after an UPDATE that sets `outcome` back to NULL (a
quarantined row released by revalidation, rare) send NOTIFY on `order_events_pending`. The
continuous producer LISTENs there instead of polling every 50 ms. SQLite has no NOTIFY: the
producer keeps polling there, and this revision does nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The channel is the producer's PENDING_CHANNEL, written out: a migration never changes.
    op.execute("""
        CREATE FUNCTION order_events_notify_pending() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('order_events_pending', '');
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER order_events_inserted AFTER INSERT ON order_events
        FOR EACH STATEMENT EXECUTE FUNCTION order_events_notify_pending()
    """)
    op.execute("""
        CREATE TRIGGER order_events_released AFTER UPDATE OF outcome ON order_events
        FOR EACH ROW WHEN (OLD.outcome IS NOT NULL AND NEW.outcome IS NULL)
        EXECUTE FUNCTION order_events_notify_pending()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS order_events_released ON order_events")
    op.execute("DROP TRIGGER IF EXISTS order_events_inserted ON order_events")
    op.execute("DROP FUNCTION IF EXISTS order_events_notify_pending()")
