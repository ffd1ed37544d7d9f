set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row3.png.tmp.25775'
$m << EOD
0.0863051 0.131457 0.135777 0.122449 0.0931756 0.120841 0.211006 0.098989
0.0807445 0.105331 0.123093 0.177803 0.126723 0.175414 0.0977711 0.11312
EOD
set title "Similarity-Aware V-MoE (paper's literal τ/σ): load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
