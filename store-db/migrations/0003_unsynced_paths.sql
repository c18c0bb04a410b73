-- Paths registered while their blocks may not be on disk yet (deferred durability, Nix's
-- default `fsync-store-paths = false`). Rows go in with the path's own row; the store deletes
-- them once the blocks are synced. After a crash, the store checks these paths' blocks and
-- removes a path whose blocks were lost (with the paths referring to it).
CREATE TABLE UnsyncedPaths (
    path INTEGER PRIMARY KEY REFERENCES ValidPaths(id) ON DELETE CASCADE
);
