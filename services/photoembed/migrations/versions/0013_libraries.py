"""libraries and their API keys; every photo, person, face and vector belongs to one library

The existing data becomes the library named `default` without being moved or rewritten: the new
`library_id` columns are added with the default library's id as a constant default (Postgres
records it in the catalogue, no row is rewritten, nothing is re-embedded), and the default is
dropped at once so that nothing written later can fall into a library by omission.

The links between a library's rows become composite foreign keys on (id, library_id): a vector or
a face belongs to a photo of its own library, a photo or a face to a person of its own library.
Whatever a bug above does, the database refuses to join two libraries' faces into one person.

The new indexes are built without blocking writes (CREATE INDEX CONCURRENTLY) and the foreign keys
are checked after they are added (NOT VALID, then VALIDATE, which lets writes go on): uploads and
searches keep being served while a large library is upgraded.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_LIBRARY_ID = "00000000-0000-4000-8000-000000000001"
LIBRARY_TABLES = ("persons", "photos", "embeddings", "faces")

# (name, definition): built concurrently
NEW_INDEXES = (
    ("ux_photos_id_library", "UNIQUE INDEX {name} ON photos (id, library_id)"),
    ("ux_persons_id_library", "UNIQUE INDEX {name} ON persons (id, library_id)"),
    (
        "ix_photos_library_created_id",
        "INDEX {name} ON photos (library_id, created_at, id)",
    ),
    (
        "ix_photos_library_status_created_id",
        "INDEX {name} ON photos (library_id, status, created_at, id)",
    ),
    ("ix_photos_library_hash", "INDEX {name} ON photos (library_id, content_hash)"),
    (
        "ix_persons_library_name_id",
        "INDEX {name} ON persons (library_id, (coalesce(name, '')), id)",
    ),
    (
        "ix_embeddings_library_model",
        "INDEX {name} ON embeddings (library_id, model, dim)",
    ),
    ("ix_faces_library_model", "INDEX {name} ON faces (library_id, model, dim)"),
)
# replaced by the library's own (above); built again by the downgrade
OLD_INDEXES = (
    # a library's newest photos would be looked for among everybody's (the default library's
    # photos are all older than a new library's)
    ("ix_photos_created_id", "INDEX {name} ON photos (created_at, id)"),
    ("ix_photos_status_created_id", "INDEX {name} ON photos (status, created_at, id)"),
    ("ix_persons_name_id", "INDEX {name} ON persons (name, id)"),
    ("ix_faces_model", "INDEX {name} ON faces (model)"),
)
# (table, name, definition) of the composite foreign keys
NEW_KEYS = (
    ("persons", "persons_library_fkey", "FOREIGN KEY (library_id) REFERENCES libraries (id)"),
    ("photos", "photos_library_fkey", "FOREIGN KEY (library_id) REFERENCES libraries (id)"),
    (
        "photos",
        "photos_person_library_fkey",
        "FOREIGN KEY (person_id, library_id) REFERENCES persons (id, library_id) "
        "ON DELETE SET NULL (person_id)",
    ),
    (
        "embeddings",
        "embeddings_photo_library_fkey",
        "FOREIGN KEY (photo_id, library_id) REFERENCES photos (id, library_id) ON DELETE CASCADE",
    ),
    (
        "faces",
        "faces_photo_library_fkey",
        "FOREIGN KEY (photo_id, library_id) REFERENCES photos (id, library_id) ON DELETE CASCADE",
    ),
    (
        "faces",
        "faces_person_library_fkey",
        "FOREIGN KEY (person_id, library_id) REFERENCES persons (id, library_id) "
        "ON DELETE SET NULL (person_id)",
    ),
)
OLD_KEYS = (
    (
        "photos",
        "photos_person_id_fkey",
        "FOREIGN KEY (person_id) REFERENCES persons (id) ON DELETE SET NULL",
    ),
    (
        "embeddings",
        "embeddings_photo_id_fkey",
        "FOREIGN KEY (photo_id) REFERENCES photos (id) ON DELETE CASCADE",
    ),
    (
        "faces",
        "faces_photo_id_fkey",
        "FOREIGN KEY (photo_id) REFERENCES photos (id) ON DELETE CASCADE",
    ),
    (
        "faces",
        "faces_person_id_fkey",
        "FOREIGN KEY (person_id) REFERENCES persons (id) ON DELETE SET NULL",
    ),
)


def _create_index(name: str, definition: str) -> str:
    """`CREATE [UNIQUE] INDEX CONCURRENTLY name ON ...` from 'INDEX {name} ON ...'."""
    unique, _, rest = definition.partition("INDEX ")
    return f"CREATE {unique}INDEX CONCURRENTLY {rest.format(name=name)}"


def _indexes(indexes: Sequence[tuple[str, str]]) -> None:
    with op.get_context().autocommit_block():
        for name, definition in indexes:
            # an interrupted concurrent build leaves an invalid index behind: build it again
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(_create_index(name, definition))


def _drop_indexes(indexes: Sequence[tuple[str, str]]) -> None:
    with op.get_context().autocommit_block():
        for name, _definition in indexes:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _keys(keys: Sequence[tuple[str, str, str]]) -> None:
    for table, name, definition in keys:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")
    for table, name, _definition in keys:
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def _drop_keys(keys: Sequence[tuple[str, str, str]]) -> None:
    for table, name, _definition in keys:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")


def upgrade() -> None:
    # Every step may run again: the index builds commit on their own, so an upgrade stopped
    # part-way is finished by running it again.
    op.execute(
        "CREATE TABLE IF NOT EXISTS libraries ("
        " id uuid PRIMARY KEY,"
        " name varchar(100) NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS ux_libraries_name ON libraries (lower(name))")
    op.execute(
        sa.text(
            "INSERT INTO libraries (id, name, created_at) VALUES (CAST(:id AS uuid), 'default', "
            "coalesce((SELECT min(created_at) FROM photos), now())) ON CONFLICT DO NOTHING"
        ).bindparams(id=DEFAULT_LIBRARY_ID)
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS api_keys ("
        " id uuid PRIMARY KEY,"
        " library_id uuid NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,"
        " label varchar(200),"
        " scopes varchar(16)[] NOT NULL"
        "   CHECK (cardinality(scopes) > 0"
        "          AND scopes <@ ARRAY['read', 'upload', 'manage', 'admin']::varchar(16)[]),"
        " secret_hash varchar(64) NOT NULL UNIQUE,"
        " created_at timestamptz NOT NULL DEFAULT now(),"
        " last_used_at timestamptz,"
        " expires_at timestamptz,"
        " revoked_at timestamptz)"
    )
    op.execute("CREATE INDEX IF NOT EXISTS ix_api_keys_library_id ON api_keys (library_id)")
    for table in LIBRARY_TABLES:
        # a constant default: recorded in the catalogue, no row rewritten
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS library_id uuid NOT NULL "
            f"DEFAULT '{DEFAULT_LIBRARY_ID}'"
        )
        op.execute(f"ALTER TABLE {table} ALTER COLUMN library_id DROP DEFAULT")
    _indexes(NEW_INDEXES)
    _drop_keys(OLD_KEYS)
    _keys(NEW_KEYS)
    _drop_indexes(OLD_INDEXES)


def downgrade() -> None:
    # Without libraries every row is everybody's: refuse while another library holds anything.
    others = (
        op.get_bind()
        .exec_driver_sql(
            "SELECT (SELECT count(*) FROM libraries WHERE id <> %(default)s), "
            "(SELECT count(*) FROM photos WHERE library_id <> %(default)s) "
            "+ (SELECT count(*) FROM persons WHERE library_id <> %(default)s)",
            {"default": DEFAULT_LIBRARY_ID},
        )
        .one()
    )
    if others[1]:
        raise RuntimeError(
            f"cannot downgrade below 0013: {others[0]} other libraries hold {others[1]} photos and "
            "persons, which would become the default library's. Delete those libraries' data "
            "first (or restore a backup taken before the upgrade)."
        )
    _indexes(OLD_INDEXES)
    _drop_keys(NEW_KEYS)
    _keys(OLD_KEYS)
    _drop_indexes(NEW_INDEXES)
    for table in LIBRARY_TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN library_id")
    op.execute("DROP TABLE api_keys")  # the keys of other (empty) libraries go with them
    op.execute("DROP TABLE libraries")
