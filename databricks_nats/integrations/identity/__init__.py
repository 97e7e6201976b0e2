"""Identity-bound publishing (issue 15): OIDC and AWS IAM identities become short-lived NATS users.

The auth-callout service (``service.py``, ``databricks-nats auth-service``) runs next to nats-server. It
verifies the token a client presents (``oidc.py``: OIDC JWTs against the issuer's JWKS; ``aws.py``: a signed
``sts:GetCallerIdentity`` request forwarded to STS), maps the verified ``Identity`` to NATS permissions with a
policy file (``policy.py``), and answers with a user JWT (``natsjwt.py``; encrypted with ``xkey.py`` when the
server asks for it), auditing every decision. The client side (the ``oidc`` and ``aws_iam`` credential sources)
lives in ``sources.py``.

Each module imports what it needs lazily: PyJWT, botocore and nkeys are extras, never needed to import this
package.
"""

__all__: list[str] = []
