mod one_move;

vcoord_plugin::export_plugin! {
    name: "one-move",
    description: "moves one vCPU per tick from the busiest to the idlest pCPU",
    cpu: one_move::OneMove,
}
