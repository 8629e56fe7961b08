"""Who may do what: authentication of each request, RBAC, rate limits, live user sessions."""
