-- Indexes that an import into empty tables set aside, to build once at its
-- end (see src/store/bulk.rs). Written in the transaction that drops them,
-- so an import that stops half way leaves its definitions here, and the
-- next open of the database builds them. (Migrations run before that
-- build: a later one that drops or changes such an index must build what
-- is listed here first.)
CREATE TABLE deferred_indexes (
    name TEXT PRIMARY KEY,
    sql  TEXT NOT NULL
);
