"""RuleSetService servicer: map protos to domain calls and back, nothing more.

Requests arrive already validated against their proto rules (see core.rpc; an update's
resource rules apply to the masked fields only); domain errors are mapped to statuses by
the interceptor.
"""

from __future__ import annotations

import grpc
from agentic.compliance.v1 import rule_sets_pb2, rule_sets_pb2_grpc

from server.access import current_principal
from server.compliance._facade import RuleSets


class RuleSetService(rule_sets_pb2_grpc.RuleSetServiceServicer):
    """agentic.compliance.v1.RuleSetService over the RuleSets facade."""

    def __init__(self, rule_sets: RuleSets) -> None:
        self._rule_sets = rule_sets

    async def CreateRuleSet(
        self, request: rule_sets_pb2.CreateRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> rule_sets_pb2.CreateRuleSetResponse:
        """Create a custom rule set from name, description, processes and source."""
        created = await self._rule_sets.create(request.rule_set, current_principal())
        return rule_sets_pb2.CreateRuleSetResponse(rule_set=created)

    async def GetRuleSet(
        self, request: rule_sets_pb2.GetRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> rule_sets_pb2.GetRuleSetResponse:
        """Return one rule set, built-in or custom."""
        found = await self._rule_sets.get(request.id, current_principal())
        return rule_sets_pb2.GetRuleSetResponse(rule_set=found)

    async def ListRuleSets(
        self, request: rule_sets_pb2.ListRuleSetsRequest, context: grpc.aio.ServicerContext
    ) -> rule_sets_pb2.ListRuleSetsResponse:
        """Return one page of rule sets, built-in ones first."""
        return await self._rule_sets.list(request)

    async def UpdateRuleSet(
        self, request: rule_sets_pb2.UpdateRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> rule_sets_pb2.UpdateRuleSetResponse:
        """Apply the masked fields of a custom set, conditionally on the etag."""
        updated = await self._rule_sets.update(
            request.id, request.rule_set, set(request.update_mask.paths), etag=request.etag
        )
        return rule_sets_pb2.UpdateRuleSetResponse(rule_set=updated)

    async def DeleteRuleSet(
        self, request: rule_sets_pb2.DeleteRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> rule_sets_pb2.DeleteRuleSetResponse:
        """Delete a custom set, conditionally on the etag."""
        await self._rule_sets.delete(request.id, etag=request.etag)
        return rule_sets_pb2.DeleteRuleSetResponse()
