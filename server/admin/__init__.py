"""Operator actions (AdminService): cache figures and clears, task statistics and purges,
and the audit log that records each of them."""

from server.admin._audit import AuditLog
from server.admin._facade import Admin
from server.admin._service import AdminService

__all__ = ["Admin", "AdminService", "AuditLog"]
