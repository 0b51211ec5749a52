-- Reconciliation reports (one per run) and the differences an operator
-- has resolved by hand, in the coordinator's database.
CREATE TABLE recon_reports (
    id         bigserial   PRIMARY KEY,
    day        date        NOT NULL,
    ran_at     timestamptz NOT NULL DEFAULT now(),
    unresolved int         NOT NULL,
    sound      boolean     NOT NULL,
    report     jsonb       NOT NULL
);
CREATE INDEX recon_reports_day ON recon_reports (day, id DESC);

CREATE TABLE recon_resolutions (
    day        date        NOT NULL,
    kind       text        NOT NULL,
    ref        text        NOT NULL,
    note       text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, kind, ref)
);
