-- Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d), as POSTGRES_USER.
-- One server, one database per job; POSTGRES_USER owns them all. The names are fixed because the service URLs in
-- docker/compose.yaml name them (tests/test_docker.py checks the two agree).
CREATE DATABASE airflow;  -- Airflow metadata (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, Celery result backend)
CREATE DATABASE recvae;   -- recommendation tables (AIRFLOW_CONN_RECVAE_DB, RECVAE_DB_URL)
CREATE DATABASE mlflow;   -- MLflow tracking and model registry backend store
