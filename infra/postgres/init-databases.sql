-- Run once by Postgres on an empty data volume (compose and k8s): one database per service,
-- owned by the stack's user (POSTGRES_USER).
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
