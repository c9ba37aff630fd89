"""Security: principals, roles and the check; the audit log; tool contexts; reputation.

The package face: ``Security`` / ``SystemSecurity`` (``system.security``),
``PrincipalView`` (``system.as_principal``), ``Permission``, ``PermissionDenied``,
the role ``TEMPLATES``, ``SecurityContext`` and ``check_tool_call`` (tool isolation),
``Reputation``, and the audit chain (``AuditChain``, ``verify``, ``tail``).
"""

from actors.errors import PermissionDenied
from actors.permissions import SecurityContext, check_tool_call
from supervisors.security.audit import AuditChain, AuditWriter, tail, verify
from supervisors.security.guard import AUDIT_TOOL, AuditUnavailable, SystemSecurity
from supervisors.security.permissions import Permission
from supervisors.security.reputation import Reputation
from supervisors.security.roles import TEMPLATES, Principal, Role, Security, UnknownPrincipal
from supervisors.security.view import PrincipalView

__all__ = [
    "AUDIT_TOOL", "AuditChain", "AuditUnavailable", "AuditWriter", "Permission", "PermissionDenied",
    "Principal", "PrincipalView", "Reputation", "Role", "Security", "SecurityContext",
    "SystemSecurity", "TEMPLATES", "UnknownPrincipal", "check_tool_call", "tail", "verify",
]
