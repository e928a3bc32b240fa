"""order_events: the partition and offset each produced event got in its topic

Recorded from the broker's delivery reports in the producer's progress transaction, so that
`orderstream trace` shows where an event went and reconciliation can tell an event still
ahead of its consumer group's committed offset (in flight) from one behind it (missing).
Rows produced before this revision keep NULL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('produced_partition', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('produced_offset', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.drop_column('produced_offset')
        batch_op.drop_column('produced_partition')
