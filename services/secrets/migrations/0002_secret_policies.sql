-- Secret policies (api.md §5.1): rules every write to a matching path keeps. A write reads the
-- tenant's policies in its own transaction under a shared advisory lock that policy changes take
-- exclusively, so a policy whose create returned applies to every write that commits after it.
CREATE TABLE secret_policies (
    tenant_id      text NOT NULL,
    name           text COLLATE "C" NOT NULL,
    path_pattern   text NOT NULL,
    allowed_types  text[],
    require_expiry boolean NOT NULL DEFAULT false,
    max_ttl        text,
    min_length     integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
