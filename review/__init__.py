"""Reviewing infrastructure without the engine: the program under Pulumi's mocks (harness), the policy
pack's rules applied as the engine applies them (engine), and the plan text per stack (plan)."""
