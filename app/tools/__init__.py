"""Tools an agent may call: their declarations, the policy that allows a call, and the audit
log of every call (`calculator`, `registry`, `policy`, `audit`)."""
