"""Stage 6, serving: resumable batch jobs (local and Ray), the HTTP service, access control."""
