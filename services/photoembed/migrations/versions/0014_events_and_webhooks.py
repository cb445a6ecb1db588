"""events (a transactional outbox), webhooks and their deliveries

Every change a customer is told about (a photo READY, FAILED or deleted, its faces done, a person
renamed, merged or deleted) is a row of `events`, written in the transaction that made the change,
so that a crash anywhere loses none. `position` orders them for the event stream; it is given to
committed events only, in the order they became visible (`photoembed.events.sequence`).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE events (
            id uuid PRIMARY KEY,
            position bigint UNIQUE,
            library_id uuid NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
            type varchar(32) NOT NULL,
            occurred_at timestamptz NOT NULL DEFAULT now(),
            data jsonb NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_events_unsequenced ON events (id) WHERE position IS NULL")
    op.execute("CREATE INDEX ix_events_library_position ON events (library_id, position)")
    op.execute("CREATE INDEX ix_events_occurred_at ON events (occurred_at)")
    # how far each reader of the whole outbox has come (the webhooks' fan-out)
    op.execute(
        "CREATE TABLE event_cursors (name varchar(32) PRIMARY KEY, position bigint NOT NULL)"
    )
    op.execute(
        """
        CREATE TABLE webhooks (
            id uuid PRIMARY KEY,
            library_id uuid NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
            url text NOT NULL,
            events varchar(32)[] NOT NULL CHECK (cardinality(events) > 0),
            secret_encrypted text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            failing_since timestamptz,
            disabled_at timestamptz,
            disabled_reason text
        )
        """
    )
    op.execute("CREATE INDEX ix_webhooks_library_id ON webhooks (library_id)")
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            id uuid PRIMARY KEY,
            webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            status varchar(16) NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING', 'SENDING', 'DELIVERED', 'FAILED')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            first_attempt_at timestamptz,
            last_attempt_at timestamptz,
            last_status_code integer,
            last_error text,
            claimed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            delivered_at timestamptz,
            CONSTRAINT deliveries_webhook_event UNIQUE (webhook_id, event_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_deliveries_due ON webhook_deliveries (next_attempt_at) "
        "WHERE status IN ('PENDING', 'SENDING')"
    )
    op.execute("CREATE INDEX ix_deliveries_event_id ON webhook_deliveries (event_id)")
    op.execute(
        "CREATE INDEX ix_deliveries_webhook_created ON webhook_deliveries (webhook_id, created_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhooks")
    op.execute("DROP TABLE event_cursors")
    op.execute("DROP TABLE events")
