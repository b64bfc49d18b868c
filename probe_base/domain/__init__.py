"""The backbone's domain: novelty of a structure's features against the training reference (FAISS indexes per element), its conformal threshold, and the reference build."""
