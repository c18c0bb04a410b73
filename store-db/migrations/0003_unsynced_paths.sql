-- Registrations made while their blocks may not be on disk yet (deferred durability, Nix's
-- default `fsync-store-paths = false`). A row goes in with each such registration, in its
-- transaction; `seq` orders them (a path re-registered keeps its id, so ids cannot), and the
-- store deletes the rows up to the last one it saw before a sync. After a crash, the store
-- checks the blocks of the paths listed and removes a path whose blocks were lost (with the
-- paths referring to it).
CREATE TABLE UnsyncedPaths (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    path INTEGER NOT NULL REFERENCES ValidPaths(id) ON DELETE CASCADE
);
CREATE INDEX UnsyncedPathsByPath ON UnsyncedPaths(path);
