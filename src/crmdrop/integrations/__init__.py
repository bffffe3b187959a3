"""What talks to other systems' protocols: the Postfix recipient lookup, IMAP polling."""
