"""Index idempotency records by creation time, for the sweeper's retention deletes.

On PostgreSQL the index is built CONCURRENTLY, outside the migration's transaction, so writers
keep going while a large table is indexed. A build that was cut off leaves an INVALID index
under the name; migrating again drops it and builds it afresh.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_idempotency_records_created_at"


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.create_index(INDEX, "idempotency_records", ["created_at"], unique=False)
        return
    with op.get_context().autocommit_block():
        valid = bind.execute(
            sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": INDEX},
        ).scalar()
        if valid is True:  # built by an earlier run whose version stamp did not commit
            return
        if valid is False:  # an earlier build was cut off and left it unusable
            op.drop_index(INDEX, table_name="idempotency_records", postgresql_concurrently=True)
        op.create_index(
            INDEX,
            "idempotency_records",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(INDEX, table_name="idempotency_records")
