"""The names of the grouping methods, in one place that imports nothing: the CLI lists them in
its help (without loading FAISS), the server checks a request against them, and
``cluster`` dispatches on them."""

# exact codes (the semantic-hashing address), Hamming-radius components, binary k-means, and
# communities of the codes' neighbour graph, in the order the CLI's help describes them
CLUSTER_METHODS = ("graph", "exact", "radius", "kmeans")
# what `hashae cluster`, Collection.clusters and the server group by when no method is named:
# the neighbour graph's NMI is above binary k-means' on the labelled sets (all six with one
# model, five of six with a second; bench/README.md, "Clustering"), and exact codes leave most
# items of a photo folder in groups of one
DEFAULT_METHOD = "graph"
