-- The Kubernetes groups a role maps to: labd's /k8s proxy impersonates the user with these
-- (Impersonate-Group), e.g. ["system:masters"] for a role that may do anything in a cluster.
-- A JSON list of strings; an empty list impersonates no group beyond what Kubernetes adds.
ALTER TABLE roles ADD COLUMN kubernetes_groups TEXT NOT NULL DEFAULT '[]';
