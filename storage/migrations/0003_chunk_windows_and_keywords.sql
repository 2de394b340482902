-- Retrieval v2: chunks of 512-1024 tokens are embedded as several <=256-piece windows (MiniLM reads no more),
-- kept in a child table with their own HNSW index; a chunk's dense score is its best window.
-- Filters (workspace, services, source type) are copied onto each vector so the index scan needs no join.
CREATE TABLE chunk_vectors (
    id           bigserial PRIMARY KEY,
    chunk_id     bigint NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    workspace    text NOT NULL,
    source_type  text NOT NULL,
    services     text[] NOT NULL DEFAULT '{}',
    embedding    vector(384) NOT NULL,
    -- sha256 of the model name and the exact text embedded: identical text reuses the stored vector instead of
    -- being embedded again (a copied page, the unchanged sections of an edited one). '' when unknown.
    text_hash    text NOT NULL DEFAULT ''
);
CREATE INDEX chunk_vectors_embedding_hnsw ON chunk_vectors USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunk_vectors_chunk ON chunk_vectors (chunk_id);
CREATE INDEX chunk_vectors_text_hash ON chunk_vectors (workspace, text_hash);
-- A selective filter (one service, incidents only) is cheaper as an exact search over the rows it keeps than as
-- an HNSW walk that throws most rows away; these let the planner find those rows without a full scan.
CREATE INDEX chunk_vectors_services ON chunk_vectors USING gin (services);
CREATE INDEX chunk_vectors_scope ON chunk_vectors (workspace, source_type);

-- Chunks indexed before this migration keep their one vector until their document is re-ingested.
INSERT INTO chunk_vectors (chunk_id, workspace, source_type, services, embedding)
SELECT id, workspace, source_type, services, embedding FROM chunks;

-- Words the full-text index should weigh like the title: the title and alert name split into words
-- ("etcdNoLeader" -> "etcd No Leader"), which the english parser would otherwise keep as one token.
ALTER TABLE chunks ADD COLUMN keywords text NOT NULL DEFAULT '';
ALTER TABLE chunks DROP COLUMN tsv;
ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', coalesce(title, '') || ' ' || keywords), 'A') ||
    setweight(to_tsvector('english', coalesce(heading, '')), 'B') ||
    setweight(to_tsvector('english', text), 'C')) STORED;
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

-- The dense search reads chunk_vectors now. A chunk keeps its own vector (the mean of its windows) for
-- chunk-to-chunk similarity, but nothing searches it by nearest neighbour, so its HNSW index would only cost
-- every insert (and ~200 MB per 100k chunks).
DROP INDEX chunks_embedding_hnsw;
