"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:04:29.648431
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('consumer_counters',
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('consumer_group', 'name')
    )
    op.create_table('deliveries',
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('customer_email', sa.Text(), nullable=False),
    sa.Column('address_line', sa.Text(), nullable=True),
    sa.Column('city', sa.Text(), nullable=True),
    sa.Column('postal_code', sa.Text(), nullable=True),
    sa.Column('country', sa.Text(), nullable=True),
    sa.Column('postal_area', sa.Text(), nullable=False),
    sa.Column('slot_date', sa.Date(), nullable=True),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('order_id')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_status'), ['status'], unique=False)

    op.create_table('delivery_capacity',
    sa.Column('postal_area', sa.Text(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('booked', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('postal_area', 'day')
    )
    op.create_table('delivery_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_history_order_id'), ['order_id'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id'),
    sa.UniqueConstraint('order_id', 'to_status', name='uq_notification_change')
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_state'), ['state'], unique=False)

    op.create_table('order_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=True),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Text(), nullable=True),
    sa.Column('sku', sa.Text(), nullable=True),
    sa.Column('quantity', sa.Text(), nullable=True),
    sa.Column('warehouse_id', sa.Text(), nullable=True),
    sa.Column('customer_email', sa.Text(), nullable=True),
    sa.Column('address_line', sa.Text(), nullable=True),
    sa.Column('city', sa.Text(), nullable=True),
    sa.Column('postal_code', sa.Text(), nullable=True),
    sa.Column('country', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), nullable=True),
    sa.Column('extra', sa.Text(), nullable=True),
    sa.Column('load_id', sa.BigInteger(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('batch_id', sa.String(length=40), nullable=True),
    sa.Column('produced_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_events_load_id'), ['load_id'], unique=False)
        batch_op.create_index(
            'ix_order_events_pending', ['id'], unique=False,
            postgresql_where=sa.text('outcome IS NULL'), sqlite_where=sa.text('outcome IS NULL'),
        )
        batch_op.create_index('ix_order_events_type_outcome', ['type', 'outcome'], unique=False)

    op.create_table('processed_events',
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error_class', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer_group', 'event_id')
    )
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.create_index('ix_processed_events_topic_outcome', ['topic', 'outcome'], unique=False)

    op.create_table('producer_batches',
    sa.Column('batch_id', sa.String(length=40), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('extracted', sa.Integer(), nullable=False),
    sa.Column('produced_inventory', sa.Integer(), nullable=False),
    sa.Column('produced_delivery', sa.Integer(), nullable=False),
    sa.Column('skipped_other', sa.Integer(), nullable=False),
    sa.Column('quarantined', sa.Integer(), nullable=False),
    sa.Column('validation', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('batch_id')
    )
    op.create_table('quarantine',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('source_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.String(length=40), nullable=False),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('row', sa.Text(), nullable=False),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ran_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('missing', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('reservations',
    sa.Column('event_id', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Text(), nullable=False),
    sa.Column('sku', sa.Text(), nullable=False),
    sa.Column('warehouse_id', sa.Text(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_order_id'), ['order_id'], unique=False)

    op.create_table('source_loads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('loaded', sa.Integer(), nullable=False),
    sa.Column('refused_missing_id', sa.Integer(), nullable=False),
    sa.Column('refused_duplicate', sa.Integer(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('stock',
    sa.Column('sku', sa.Text(), nullable=False),
    sa.Column('warehouse_id', sa.Text(), nullable=False),
    sa.Column('on_hand', sa.Integer(), nullable=False),
    sa.Column('reserved', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('reserved >= 0', name='ck_stock_reserved_nonneg'),
    sa.PrimaryKeyConstraint('sku', 'warehouse_id')
    )



def downgrade() -> None:

    op.drop_table('stock')
    op.drop_table('source_loads')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_order_id'))

    op.drop_table('reservations')
    op.drop_table('reconciliation_runs')
    op.drop_table('quarantine')
    op.drop_table('producer_batches')
    with op.batch_alter_table('processed_events', schema=None) as batch_op:
        batch_op.drop_index('ix_processed_events_topic_outcome')

    op.drop_table('processed_events')
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.drop_index('ix_order_events_type_outcome')
        batch_op.drop_index(batch_op.f('ix_order_events_load_id'))
        batch_op.drop_index(
            'ix_order_events_pending', postgresql_where=sa.text('outcome IS NULL'), sqlite_where=sa.text('outcome IS NULL')
        )

    op.drop_table('order_events')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_state'))

    op.drop_table('notifications')
    with op.batch_alter_table('delivery_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_history_order_id'))

    op.drop_table('delivery_history')
    op.drop_table('delivery_capacity')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_status'))

    op.drop_table('deliveries')
    op.drop_table('consumer_counters')

