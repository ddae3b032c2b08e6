"""The mailer's Pulumi components. Packages functions/ but never imports from it."""
