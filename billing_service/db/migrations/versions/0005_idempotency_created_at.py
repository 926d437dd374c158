"""Index idempotency records by creation time, for the sweeper's retention deletes.

On PostgreSQL the index is built CONCURRENTLY, outside the migration's transaction, so writers
keep going while a large table is indexed. If that build is interrupted it leaves an INVALID
index: drop it (DROP INDEX CONCURRENTLY ix_idempotency_records_created_at) and migrate again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 10:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_idempotency_records_created_at"


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX,
                "idempotency_records",
                ["created_at"],
                unique=False,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    else:
        op.create_index(INDEX, "idempotency_records", ["created_at"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(INDEX, table_name="idempotency_records")
