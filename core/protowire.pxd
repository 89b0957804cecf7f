# The protobuf wire format of RouteOrders, read and written natively (declarations: none are shared;
# the module's functions are its Python entry points). See protowire.pyx.
